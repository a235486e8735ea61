"""Hardware interfaces (base.py) and the Raspberry Pi adapters (pi/)."""

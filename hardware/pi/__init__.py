"""Raspberry Pi adapters. Each module imports its vendor library (picamera2, smbus2, the
lgpio pin factory) itself; nothing here is imported unless the ``pi`` backend is chosen by
name through :func:`hardware.backends.load_board`."""

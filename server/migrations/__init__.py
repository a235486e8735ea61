"""Schema migrations of the server database (tortoise's own migration engine).

To add one after changing :mod:`server.models`::

    python -c 'import json; from server.db import tortoise_config; \
        print(json.dumps(tortoise_config("sqlite:///tmp/unbroken-mig.db")))' > /tmp/tortoise.json
    .venv/bin/tortoise --config-file /tmp/tortoise.json makemigrations

The server applies pending migrations when it starts.
"""

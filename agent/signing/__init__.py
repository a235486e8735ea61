"""Device keys, session keys, record signing and media encryption."""

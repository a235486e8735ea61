"""The unbroken command line."""

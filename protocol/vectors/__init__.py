"""Known-answer test vectors of the protocol formats, made from fixed TEST keys.

``python -m protocol.vectors.generate`` rewrites them; SPEC.md ("Test vectors") describes
each file.
"""

"""Hooks for the tests, kept apart so that product code cannot mistake them for features.

`faults` holds the named fault points the crash tests arm (inert unless armed);
`mock` is the transport double, driven by a handler function like httpx's MockTransport.
"""

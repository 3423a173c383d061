"""The wire: how palm messages look and travel, free of any serving or calling logic.

``protocol`` (headers, kinds, decoding), ``sockets`` (the one context and the
options every socket gets), ``discovery`` (asking a db endpoint who serves what,
and the shared cache through it), ``shipping`` (functions and chunks for
``map``). Nothing here imports anything of palm's above the wire.
"""

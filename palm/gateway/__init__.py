"""palm's HTTP edge: a Flask gateway served by gunicorn, behind Envoy.

Requests flow ``HTTP client -> Envoy -> gateway -> palm masters/servers``.

- :mod:`palm.gateway.app`: ``create_app(config=None)``, the Flask app factory
  (configuration from ``PALM_GATEWAY_*`` variables, see :mod:`palm.gateway.settings`).
- :mod:`palm.gateway.asgi`: ``create_asgi_app(config=None)``, what gunicorn serves:
  parallel jobs answered on an event loop, every other request by the Flask app.
- :mod:`palm.gateway.worker`: ``EdgeWorker``, palm's gunicorn worker class (uvicorn).
- :mod:`palm.gateway.serve`: ``GatewayServer``, gunicorn in a child process.
- :mod:`palm.gateway.envoy_config`: ``EdgeConfig`` and the rendering of Envoy's
  bootstrap and filesystem xDS files from the templates in ``envoy/``.
- :mod:`palm.gateway.envoy_process`: ``EnvoyProcess``, Envoy in a child process,
  routes added while it runs.

Importing this package starts nothing and reads no environment variable.
"""

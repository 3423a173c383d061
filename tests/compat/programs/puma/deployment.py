"""A PUMA deployment with no service: only the workers puma_map uses elsewhere."""

from palm.puma import puma_config, puma_start

puma_config({"workers": 2})
puma_start()

"""The calling side: clients that send jobs and take results back, blocking,
threaded and asyncio, for single servers, masters and chains."""

from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, ClientState, Default, Timeout

__all__ = ["DEFAULT", "DEFAULT_TIMEOUT_S", "ClientState", "Default", "Timeout"]

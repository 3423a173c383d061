"""The calling side: clients that send jobs and take results back, blocking,
threaded and asyncio, for single servers, masters and chains."""

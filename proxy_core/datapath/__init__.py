"""The data path: listeners, what a connection meets before the relay (PROXY header, limits, TLS, the peek at its
head or ClientHello), the relay itself and the switchboard that pairs clients with servers.

Pure parsers (`sniffer`, `proxyproto`, `clienthello`, `limits`) sit beside the asyncio protocols that use them.
"""

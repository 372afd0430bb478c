"""pycoflux.server.api"""

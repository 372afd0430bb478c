"""pycoflux.server"""

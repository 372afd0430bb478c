"""pycoflux.cli"""

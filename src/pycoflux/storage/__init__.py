"""pycoflux.storage"""

"""pycoflux.ui"""

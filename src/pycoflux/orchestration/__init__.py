"""pycoflux.orchestration"""

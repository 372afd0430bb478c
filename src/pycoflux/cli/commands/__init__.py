"""pycoflux.cli.commands"""

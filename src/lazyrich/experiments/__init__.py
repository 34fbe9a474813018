"""lazyrich.experiments"""

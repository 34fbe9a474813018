"""lazyrich.ntk"""

"""lazyrich.plots"""

"""lazyrich.data"""

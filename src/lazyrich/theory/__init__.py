"""lazyrich.theory"""

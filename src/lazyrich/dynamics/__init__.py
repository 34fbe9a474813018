"""lazyrich.dynamics"""

"""lazyrich.models"""

"""lazyrich.sweep"""

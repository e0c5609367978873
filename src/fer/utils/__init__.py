"""fer.utils"""

"""fer.training"""

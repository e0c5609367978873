"""fer.evaluation"""

"""fer.data"""

"""fer.report"""

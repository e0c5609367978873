"""fer.workflow"""

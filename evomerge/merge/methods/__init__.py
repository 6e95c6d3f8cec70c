"""merge/methods"""

"""complete"""

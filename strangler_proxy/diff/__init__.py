"""(package docstring written below)"""

"""Billow's CDK app: one stack composing one construct per concern."""

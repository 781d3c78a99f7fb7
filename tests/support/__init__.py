"""Helpers the tests share that are not tests themselves: fakes, tiny models, images, assertions, processes."""

"""The application layer: composes measurement and model into what one command does, so the library can do it with one call.

Kept free of imports so that ``capplan --help`` stays fast."""

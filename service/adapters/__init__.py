"""Protocol adapters: each translates one wire protocol to the core's calls and back."""

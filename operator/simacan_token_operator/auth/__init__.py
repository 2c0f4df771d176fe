"""The Simacan Auth API side: the HTTP client and the token pool shared by credentials."""

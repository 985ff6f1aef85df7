#!/usr/bin/env python3
"""Mint an HS256 test JWT the way a Better Auth deployment sharing BETTER_AUTH_SECRET would.

usage: mint.py [SECRET] [SUB] [TTL_SECONDS]   (defaults: the bench secret, alice, 3600)
"""
import sys
import time

import jwt  # pyjwt

secret = sys.argv[1] if len(sys.argv) > 1 else "dev-secret-change-me-0123456789abcdef"
sub = sys.argv[2] if len(sys.argv) > 2 else "alice"
ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
now = int(time.time())
claims = {"sub": sub, "iat": now, "exp": now + ttl, "email": f"{sub}@example.com"}
print(jwt.encode(claims, secret, algorithm="HS256"))

#!/usr/bin/env python3
"""Make a fresh Ed25519 key, write its JWKS (Better Auth's shape: no `use`), print an EdDSA token.

usage: mint_eddsa.py JWKS_PATH BASE_URL [SUB] [TTL_SECONDS]
The token carries kid, sub, iss = aud = BASE_URL, like Better Auth's JWT plugin.
"""
import json
import sys
import time

import jwt  # pyjwt[crypto]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

jwks_path, base_url = sys.argv[1], sys.argv[2]
sub = sys.argv[3] if len(sys.argv) > 3 else "alice"
ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 3600
key = Ed25519PrivateKey.generate()
jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
jwk.update({"alg": "EdDSA", "kid": "bench-ed25519"})
with open(jwks_path, "w") as out:
    json.dump({"keys": [jwk]}, out)
now = int(time.time())
claims = {"sub": sub, "iss": base_url, "aud": base_url, "iat": now, "exp": now + ttl}
print(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench-ed25519"}))

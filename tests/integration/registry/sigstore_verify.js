// Verifies a Sigstore bundle with the npm packages @sigstore/bundle and @sigstore/verify, offline:
// the trust material is one public key (looked up by the bundle's key hint) and an empty trusted
// root, and no transparency-log entry or timestamp is required (a key-pair signature, as
// `cosign sign --key` without Rekor). Usage: node sigstore_verify.js BUNDLE.json PUBLIC.pem
// [ARTIFACT]. Prints "verified" and exits 0, or prints the verifier's error and exits 1.
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const { bundleFromJSON } = require("@sigstore/bundle");
const { Verifier, toSignedEntity, toTrustMaterial } = require("@sigstore/verify");

const [bundlePath, keyPath, artifactPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
  const publicKey = crypto.createPublicKey(fs.readFileSync(keyPath));
  const root = { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] };
  const trust = toTrustMaterial(root, () => ({ publicKey, validFor: () => true }));
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  const artifact = artifactPath ? fs.readFileSync(artifactPath) : undefined;
  verifier.verify(toSignedEntity(bundle, artifact));
  console.log("verified");
} catch (e) {
  console.log(`failed: ${e.code || e.name}: ${e.message}`);
  process.exit(1);
}

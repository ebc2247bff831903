/**
 * The version of Aiki: what `/health`, the OpenAPI document, exported traces and `aiki --version` report. Every
 * published package carries the same version in its `package.json` (a test holds them together); a release
 * changes it here and there.
 *
 * A constant rather than a JSON import of `package.json`: the compiled module sits one directory deeper
 * (`dist/src`) than its source, so no relative path to the manifest is right in both places.
 */
export const version = "0.1.0"

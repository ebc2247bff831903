/**
 * What each role may call, as read from the API declaration (the table the server enforces).
 */
import { assert, describe, it } from "@effect/vitest"
import { mayCall } from "../src/Permissions.ts"

describe("Permissions", () => {
  it("follows the access middleware of each endpoint", () => {
    assert.isTrue(mayCall("client", { group: "runs", endpoint: "cancel" }))
    assert.isTrue(mayCall("client", { group: "runs", endpoint: "list" }))
    assert.isFalse(mayCall("client", { group: "fleet", endpoint: "workers" }))
    assert.isTrue(mayCall("admin", { group: "fleet", endpoint: "workers" }))
    assert.isFalse(mayCall("worker", { group: "runs", endpoint: "status" }))
    assert.isTrue(mayCall("worker", { group: "execution", endpoint: "claim" }))
    assert.isFalse(mayCall("client", { group: "execution", endpoint: "claim" }))
    // Open endpoints: health and the login itself.
    assert.isTrue(mayCall("worker", { group: "health", endpoint: "server" }))
    assert.isTrue(mayCall("worker", { group: "session", endpoint: "login" }))
  })
})

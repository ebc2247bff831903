/**
 * What a role may call, read from the API's own declaration: an endpoint is open to a role when every access
 * middleware on it lets that role in (`Access.rolesAllowed`). The server enforces the same table, so a page that
 * asks `mayCall` shows exactly the actions the server would accept, and moving an endpoint to another access
 * middleware changes both at once.
 */
import { type Role, rolesAllowed } from "./Access.ts"
import { AikiApi } from "./Api.ts"

type Groups = typeof AikiApi.groups

/** An endpoint of the API, by group and endpoint name. */
export type EndpointRef = {
  readonly [G in keyof Groups]: { readonly group: G; readonly endpoint: keyof Groups[G]["endpoints"] & string }
}[keyof Groups]

/**
 * Whether a caller with `role` may call the endpoint.
 *
 * @example
 * mayCall("client", { group: "runs", endpoint: "cancel" })   // true
 * mayCall("client", { group: "fleet", endpoint: "workers" }) // false
 */
export const mayCall = (role: Role, ref: EndpointRef): boolean => {
  const group: { readonly endpoints: Record<string, { readonly middlewares: ReadonlySet<{ readonly key: string }> }> } =
    AikiApi.groups[ref.group]
  const endpoint = group.endpoints[ref.endpoint]
  if (endpoint === undefined) return false
  for (const middleware of endpoint.middlewares) {
    const roles = rolesAllowed.get(middleware.key)
    if (roles !== undefined && !roles.includes(role)) return false
  }
  return true
}

// Types of @langtian/sdk: everything in ./index (generated from src/lib.rs by `napi build`), plus
// the coded errors and the Arrow helper added by sdk.js.
import type { Table } from 'apache-arrow'
import type { Client, QueryOptions } from './index'

export * from './index'

/** Every error the SDK throws or rejects with carries one of these codes (see docs/node.md). */
export type LangtianErrorCode =
  | 'ERR_CONNECT'
  | 'ERR_PUBLISH'
  | 'ERR_ENVELOPE'
  | 'ERR_REQUEST'
  | 'ERR_TIMEOUT'
  | 'ERR_NO_SERVICE'
  | 'ERR_DISCOVERY'
  | 'ERR_QUERY_TIMEOUT'
  | 'ERR_QUERY_PROTOCOL'
  | 'ERR_QUERY_BAD_REQUEST'
  | 'ERR_QUERY_PARSE'
  | 'ERR_QUERY_NOT_READ_ONLY'
  | 'ERR_QUERY_EXECUTION'
  | 'ERR_QUERY_TOO_LARGE'
  | 'ERR_QUERY_UNAVAILABLE'
  | 'ERR_LIVE_NO_SNAPSHOT'
  | 'ERR_LIVE_BAD_ARGUMENT'

export interface LangtianError extends Error {
  code: LangtianErrorCode
}

export declare const ErrorCodes: Readonly<{
  CONNECT: 'ERR_CONNECT'
  PUBLISH: 'ERR_PUBLISH'
  ENVELOPE: 'ERR_ENVELOPE'
  REQUEST: 'ERR_REQUEST'
  TIMEOUT: 'ERR_TIMEOUT'
  NO_SERVICE: 'ERR_NO_SERVICE'
  QUERY_TIMEOUT: 'ERR_QUERY_TIMEOUT'
  QUERY_PROTOCOL: 'ERR_QUERY_PROTOCOL'
  DISCOVERY: 'ERR_DISCOVERY'
  LIVE_NO_SNAPSHOT: 'ERR_LIVE_NO_SNAPSHOT'
  LIVE_BAD_ARGUMENT: 'ERR_LIVE_BAD_ARGUMENT'
}>

/** `client.query(sql)` decoded into an apache-arrow Table. */
export declare function queryTable(client: Client, sql: string, options?: QueryOptions): Promise<Table>

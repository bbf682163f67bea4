// An honest connection status, derived from the provider's own events and
// the browser's online/offline state, never from a timer or a guess.
//
//   offline       the browser has no network: the provider is disconnected on
//                 purpose, edits stay in the local Y.Doc
//   connecting    first connection, or connected but not yet synced
//   reconnecting  was connected and synced before, now trying again
//   connected     socket open and the server's state received (sync step 2)
//   closed        the server ended the session for good (a 44xx close)

import type { WebsocketProvider } from 'y-websocket'
import type * as Y from 'yjs'

export type Status = 'offline' | 'connecting' | 'reconnecting' | 'connected' | 'closed'

export interface StatusSnapshot {
  status: Status
  /** Local edits made while not connected and synced, not yet confirmed by a sync. */
  unsynced: boolean
  /** Why the server closed the session, for `closed`. */
  reason: string | null
}

type Listener = (snapshot: StatusSnapshot) => void

export class ConnectionStatus {
  private readonly listeners = new Set<Listener>()
  private everSynced = false
  private unsynced = false
  private closedReason: string | null = null
  private last: StatusSnapshot | null = null

  constructor(
    private readonly provider: WebsocketProvider,
    doc: Y.Doc,
  ) {
    provider.on('status', () => this.emit())
    provider.on('sync', (synced: boolean) => {
      if (synced) {
        this.everSynced = true
        this.unsynced = false
      }
      this.emit()
    })
    provider.on('connection-close', () => this.emit())
    provider.on('closed', (event) => {
      this.closedReason = closeReason(event.code, event.reason)
      this.emit()
    })
    doc.on('update', (_update: Uint8Array, origin: unknown) => {
      if (origin !== provider && !(provider.wsconnected && provider.synced)) {
        this.unsynced = true
        this.emit()
      }
    })
    window.addEventListener('online', () => this.emit())
    window.addEventListener('offline', () => this.emit())
  }

  current(): StatusSnapshot {
    const p = this.provider
    let status: Status
    if (!navigator.onLine) status = 'offline'
    else if (this.closedReason !== null && !p.shouldConnect) status = 'closed'
    else if (p.wsconnected && p.synced) status = 'connected'
    else status = this.everSynced ? 'reconnecting' : 'connecting'
    return { status, unsynced: this.unsynced, reason: this.closedReason }
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener)
    listener(this.current())
    return () => this.listeners.delete(listener)
  }

  /** Call after changing the provider by hand (connect/disconnect). */
  emit() {
    const next = this.current()
    if (
      this.last &&
      this.last.status === next.status &&
      this.last.unsynced === next.unsynced &&
      this.last.reason === next.reason
    ) {
      return
    }
    this.last = next
    for (const listener of this.listeners) listener(next)
  }

  /** A deliberate reconnect clears a previous terminal close. */
  resetClosed() {
    this.closedReason = null
  }
}

function closeReason(code: number, reason: string): string {
  if (code === 4404) return 'This document was deleted.'
  if (code === 4401 || code === 4403) return reason || 'Access to this document was revoked.'
  return reason || `The server closed the connection (${code}).`
}

export const STATUS_TEXT: Record<Status, string> = {
  connected: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
}

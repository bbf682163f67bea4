import { defineConfig } from 'vite'

// The build is committed to `dist/` and embedded into the quire binary, so it
// must be byte-for-byte reproducible: content-hashed file names, no source
// maps (they would carry absolute paths), no build timestamps.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
    // Small files stay separate files rather than data: URLs, so the
    // server's content types and cache headers apply to them.
    assetsInlineLimit: 0,
    // The editor chunk (ProseMirror + Yjs) is a little over the default.
    chunkSizeWarningLimit: 800,
  },
  server: {
    // `npm run dev` against a quire on the default port.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
})

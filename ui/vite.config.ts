import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

// Built into dist/ and served by lt-gateway (`lt up` serves ui/dist at http://127.0.0.1:8080).
export default defineConfig({
  plugins: [react()],
  worker: { format: 'es' },
  build: { outDir: 'dist', sourcemap: true },
  test: { include: ['src/**/*.test.ts'] },
})

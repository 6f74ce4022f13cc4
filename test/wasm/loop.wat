;; Spins forever: only a signal stops it.
(module
  (func (export "_start")
    (loop $spin (br $spin))))

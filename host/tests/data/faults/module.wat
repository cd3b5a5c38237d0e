;; A hand-written decision module for fault tests. The host test replaces:
;;   {VERSION}    the decide interface version it exports
;;   {PLAN_BODY}  the body of plan-kind (its 15 flattened i32 params are unused)
;; describe() returns {name: "fault", version: "0.0.1", interface-version: "0.1.0"}.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  ;; Bump allocator; inputs in the fault tests are small. Grows memory when needed.
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))
        unreachable))
    (local.get $p))
  (data (i32.const 16) "fault")
  (data (i32.const 32) "0.0.1")
  (data (i32.const 48) "0.1.0")
  (data (i32.const 64) "\10\00\00\00\05\00\00\00\20\00\00\00\05\00\00\00\30\00\00\00\05\00\00\00")
  (func (export "vapgen:decider/decide@{VERSION}#describe") (result i32)
    (i32.const 64))
  (func (export "vapgen:decider/decide@{VERSION}#plan-kind")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    {PLAN_BODY})
)

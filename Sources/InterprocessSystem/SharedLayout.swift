/// The byte offset of `field` in `Layout`, one of the C structs of `CInterprocess.h` that describe
/// what lives in shared memory.
///
/// Every field of a shared structure is reached through its C definition, never through an offset
/// written in Swift: the C header is the one place where a layout is defined (other languages read
/// it too), and `LayoutTests` pins each structure field by field. Use it where an object is created,
/// opened or described; hot paths keep the pointers they computed once.
@inline(__always)
package func fieldOffset<Layout>(_ field: PartialKeyPath<Layout>) -> Int {
    guard let offset = MemoryLayout<Layout>.offset(of: field) else {
        preconditionFailure("\(field) is not a stored field of \(Layout.self)")
    }
    return offset
}

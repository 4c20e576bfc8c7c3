/// A failure of a tool itself (not of the library): `ipc`, its benchmarks and their peer processes
/// throw it, and `ipc` reports it as "ipc: <message>".
package struct ToolError: Error, CustomStringConvertible {
    package var description: String

    package init(_ description: String) { self.description = description }
}

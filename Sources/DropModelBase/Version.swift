/// dropmodel's version, written into every bundle (`creator`), export and `--version`.
public enum DropModelVersion {
    public static let string = "0.1.0"
}

# Packs two prepared caches (boneage prepare) as JPEG bytes into one npz for search.py, small
# enough to carry to a GPU machine. The output holds derived images of the data: keep it out
# of the repository.
#
#   python3 export.py rsna-dev.cache thumbs.cache data.npz QUALITY_RADIOGRAPHS QUALITY_THUMBS THUMB_SIZE
#   (as used: 92 88 104)
import json, struct, sys, numpy as np, cv2
def read_cache(path):
    with open(path,'rb') as f:
        head=f.read(24); ver,hb=struct.unpack('<II',head[16:24]); h=json.loads(f.read(hb))
    off=(24+hb+63)//64*64
    n,s=h['count'],h['size']
    px=np.memmap(path,np.uint8,'r',off,(n,s,s))
    return h,px
def pack(path,size,q):
    h,px=read_cache(path)
    blobs=[]
    for im in px:
        if im.shape[0]!=size: im=cv2.resize(im,(size,size),interpolation=cv2.INTER_AREA)
        blobs.append(cv2.imencode('.jpg',im,[cv2.IMWRITE_JPEG_QUALITY,q])[1].tobytes())
    lens=np.array([len(b) for b in blobs]); data=np.frombuffer(b''.join(blobs),np.uint8)
    print(path,len(blobs),data.nbytes/1e6,'MB')
    return dict(ids=np.array(h['ids']),ages=np.array(h['ages'],np.float32),male=np.array(h['male'],np.uint8),lens=lens,data=data)
r=pack(sys.argv[1],320,int(sys.argv[4])); t=pack(sys.argv[2],int(sys.argv[6]),int(sys.argv[5]))
np.savez(sys.argv[3],**{'r_'+k:v for k,v in r.items()},**{'t_'+k:v for k,v in t.items()})
